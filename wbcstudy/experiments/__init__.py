"""One module per chapter: that chapter's procedures, each a tested function made of the shared rooms."""
