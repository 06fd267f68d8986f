"""Which letter belongs to which Customer or Lead: the rules, the CRM directory import, relink and backfill."""
