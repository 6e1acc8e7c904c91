"""Jobs without HTTP: `embedserve embed` embeds whole corpora with the server's engine."""
