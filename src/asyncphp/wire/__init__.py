"""Pure protocol code: message → form body → FastCGI request; replies (FastCGI, Redis) → typed values."""
