//! Small helpers shared by the tools and the libraries.
