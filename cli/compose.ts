export async function composeCli(_o: { check?: boolean }): Promise<void> {
  throw new Error('compose: not implemented yet');
}
