//! Benchmarks of the Taskforge workflow engine.
