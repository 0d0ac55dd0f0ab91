export function MapPage(_props: { params: Record<string, string> }) {
  return <h1>Fleet map</h1>;
}
