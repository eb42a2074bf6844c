# Shared by the benchmark scripts (sourced first, with the script's arguments):
# --help prints the script's opening comment; any other argument must be a
# whole number, or the script stops with exit 2 before it changes anything.
case "${1:-}" in
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
esac
for arg in "$@"; do
  [[ "$arg" =~ ^[0-9]+$ ]] || { echo "arguments are whole numbers, not '$arg'; see $0 --help" >&2; exit 2; }
done
