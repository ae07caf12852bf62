"""What the pods share through Redis: the per-user connection cap (`presence`) and the subscriber counts across pods (`demand`)."""
