"""One router per area of the API, each a thin layer over the functions the CLI calls."""
