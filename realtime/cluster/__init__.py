"""What the pods share through Redis: the per-user connection cap (`presence`), subscribers per asset (`demand`)."""
