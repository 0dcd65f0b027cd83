"""The `guide-align` console command, assembled above every package.

Each command parses its options, builds a config, calls a plain function of a package and
prints; collaborators (the merge encoder, the LLM client settings) are passed down as arguments.
"""
