export function ProgramsPage(_props: { params: Record<string, string> }) {
  return <h1>Programs</h1>;
}
