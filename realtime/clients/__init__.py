"""The connected clients: authentication, token deadlines, limits, and the Socket.IO event handlers."""
