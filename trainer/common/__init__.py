"""What every package uses: user errors, file writes, the repository and home folders."""
