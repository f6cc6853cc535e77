"""Pure decisions: what to do with jobs, stream entries and connections, given ``now``. No I/O here."""
