"""The one send path: an event encoded and framed once for a room's members (`delivery`); price fan-out (`fanout`)."""
