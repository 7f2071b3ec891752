"""The doit glue: task actions, up-to-date checks and the console reporter; the only code that imports doit."""
