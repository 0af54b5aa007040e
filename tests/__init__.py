"""The test suite, one package per family (mirrors checks/ and fixers/)."""
