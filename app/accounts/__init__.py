"""Who may use the service from a browser: users, their passwords and their access tokens."""
