"""`crisisctl serve`: the JSON API, the SSE event stream and the console's pages."""
