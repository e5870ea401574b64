"""Mode planners: each turns a chat request over a collection into a `ModePrompt` (`rag`, `lc`), or chooses
between them (`auto`, with the engine's help)."""
