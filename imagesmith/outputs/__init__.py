"""What ships with an image: inventory, licences, SBOMs, manifest, signatures, reports."""
