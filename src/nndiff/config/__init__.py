"""Settings declared once (default, help, range) and the options and YAML files made from them."""
