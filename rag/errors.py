"""Errors the RAG layer raises for bad input; the server maps each to its HTTP status in one place."""


class RagError(ValueError):
    """Base class: the message says what was wrong and what to do."""


class InvalidCollectionNameError(RagError):
    """A collection name Chroma cannot hold (400)."""


class CollectionNotFoundError(RagError):
    """No collection of that name (404)."""


class CollectionExistsError(RagError):
    """Creating a collection that is already there (409)."""


class DocumentNotFoundError(RagError):
    """No document of that id in the collection (404)."""


class InvalidDocumentNameError(RagError):
    """A file name lcrag will not store: no file part, or too long (400)."""


class UnsupportedDocumentError(RagError):
    """A file type lcrag cannot read (415)."""


class UnreadableDocumentError(RagError):
    """A supported type whose content cannot be read: empty, corrupt, binary, encrypted (422)."""


class ContextTooLongError(RagError):
    """The whole collection does not fit the model's context in LC mode (400)."""

    def __init__(self, message: str, needed: int, available: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available


class StoreInUseError(RagError):
    """Another process has the embedded Chroma store open (the lock file says which)."""


class StoreUnreadableError(RagError):
    """The embedded Chroma store's files cannot be opened (corrupt, or not a Chroma store)."""
