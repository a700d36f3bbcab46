"""The array layer: plain ndarrays in, plain ndarrays out, one module per metric family.

``moments`` (streamed second moments), ``dimensionality`` (effective rank from a spectrum),
``alignment`` (teacher-student comparison from joint moments), ``frequency`` (spatial power by
band), ``robustness`` (drift, probes, frequency response).
"""
