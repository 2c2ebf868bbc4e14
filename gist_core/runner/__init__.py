"""The orchestrators: the only code that writes into a run folder (select, compare, geometry, bench)."""
