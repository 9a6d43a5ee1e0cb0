"""lamina serve: an HTTP server with llama-server's routes and the OpenAI API (see README, "Serving")."""
