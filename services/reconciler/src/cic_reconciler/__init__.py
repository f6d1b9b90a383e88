"""CIC reconciler: our state against what the backends actually run."""
