"""The array layer: plain ndarrays in, plain ndarrays out, one module per metric family.

``moments`` (streamed second moments), ``pairs`` (joint moments of teacher and student),
``dimensionality`` (effective rank from a spectrum), ``alignment`` (teacher-student comparison
from joint moments), ``predictivity`` (cross-validated ridge and the retention spectrum),
``neighbours`` (sample-level metrics from one similarity pass), ``frequency`` (spatial power
by band), ``robustness`` (drift, probes, frequency response), ``linalg`` (shared helpers) and
``registry`` (every metric declared once, next to its function).
"""
