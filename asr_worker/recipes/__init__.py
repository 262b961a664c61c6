"""Training recipes of the ASR worker: they make the models it serves, and it never imports them."""
