"""Small shared helpers: config validation errors, random generators, run files."""
