"""The pages made from the declarations: the manual pages, every settings table, the example settings."""
