"""pytest settings shared by the suite: the `slow` marker (deselected by default where a test says so; run with `-m slow`),
and the 40 slowest cases listed at the end (`--durations`), so a CI log says which cases to mark `slow` when the suite
grows past its 25 minutes."""

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: a long case, left out of the default run (run with -m slow)')
    if getattr(config.option, 'durations', None) is None: config.option.durations = 40
