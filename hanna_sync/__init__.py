"""hanna-sync: archive a company's email into its CRM, linked to Customers and Leads."""

# The one place the version is written: pyproject.toml reads it (dynamic), `--version` prints it, each
# database migration records it, and CHANGELOG.md's top entry must name it (tests/test_release.py).
__version__ = "0.1.0"
