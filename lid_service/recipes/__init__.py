"""Training recipes of the LID service: they make the models it serves, and it never imports them."""
