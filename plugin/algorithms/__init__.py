"""The Processing algorithms of the Cropland Extractor provider, one module each."""
