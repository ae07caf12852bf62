"""What pods share through Redis: connections, the per-user cap (presence), demand."""
