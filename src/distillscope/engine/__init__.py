"""The analysis engine: a plan, one pass over the store, mergeable accumulators."""
