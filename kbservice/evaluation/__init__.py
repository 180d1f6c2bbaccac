"""The dataset evaluations behind `kbservice eval ...` and the benchmarks that cross rooms (`bench ingest`,
`bench images`). They build on every room below; production code never imports them."""
