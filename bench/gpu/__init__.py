"""The GPU check: a bundle for bare GPU hosts, one script that runs every GPU step, and its end-to-end driver."""
