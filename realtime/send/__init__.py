"""The send path: fan-out of a tick to this pod's subscribers and each connection's writer."""
