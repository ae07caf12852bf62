"""Client sessions: authentication, token deadlines, limits, and the Socket.IO event handlers."""
