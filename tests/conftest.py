"pytest settings shared by the suite: the `slow` marker (deselected by default where a test says so; run with `-m slow`)."

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: a long case, left out of the default run (run with -m slow)')
