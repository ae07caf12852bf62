"""Durable private events and connection state recovery.

A private event (to a `user:<sub>` or `role:<role>` room) is appended once to
an ordered log (`log`: Redis Streams, or `memory` in embedded mode); its
offset is the log's entry id. Every pod runs one `reader`, which delivers the
log to its local room members with the offset as the event's last argument
and replays a room's history to a connection that recovers (`recovery`,
`sessions`). The ways in are the API, the `emitter` and the `router` of a
Redis Stream that back ends append to.
"""
