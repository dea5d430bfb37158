"""The terminal front-end: `kullm ask` (`ask`) and how it shows answers and notices (`render`)."""
