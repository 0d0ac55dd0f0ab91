export function AlarmsPage(_props: { params: Record<string, string> }) {
  return <h1>Alarms</h1>;
}
