"""The evaluation harness: a benchmark's scenes run end to end through the pipeline (suites, runner, on Ray or in
turn), and the papers' tables and plots. The metrics themselves are in recon/metrics."""
