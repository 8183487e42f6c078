"""What the tests share: import from these modules, never from conftest."""
