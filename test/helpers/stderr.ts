/** What `fn` writes to this process's stderr, which it does not reach. */
export function stderrOf(fn: () => void): string {
  const chunks: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    fn();
  } finally {
    process.stderr.write = write;
  }
  return chunks.join('');
}
