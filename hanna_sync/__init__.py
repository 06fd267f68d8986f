"""hanna-sync: archive a company's email into its CRM, linked to Customers and Leads."""

__version__ = "0.1.0"
