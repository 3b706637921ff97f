"""The model: graph structure (`graph`), named graph families (`families`), Dirichlet kernels (`kernels`)."""
