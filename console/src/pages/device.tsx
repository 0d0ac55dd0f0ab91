export function DevicePage(_props: { params: Record<string, string> }) {
  return <h1>Device</h1>;
}
