"""The language model room: locating and converting the base model, and (next) generation and scoring."""
