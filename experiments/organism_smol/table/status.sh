#!/usr/bin/env bash
# Which runs of the decisive table have finished: prints a markdown list (commit it as results/table/STATUS.md).
source "$(dirname "$0")/common.sh"
echo "# organism-smol decisive table: status ($(date -u +%Y-%m-%d\ %H:%M) UTC)"
echo
for d in "$RUNS"/*/ "$RUNS"/durability/*/ "$RUNS"/defenses/*/; do
  name=${d#"$RUNS"/}; name=${name%/}
  case $name in data|splits|durability|defenses|durability/data-*) continue ;; esac
  for s in "$d"s* "$d"; do
    [ -d "$s" ] || continue
    trained=$([ -f "$s/model/config.json" ] && echo trained || echo "-")
    last=$(grep -o "step [0-9]*/[0-9]*" "$s/train.log" 2>/dev/null | tail -1 || true)
    evals=$( (ls -d "$s"/eval-*/metrics.json 2>/dev/null || true) | sed "s|.*/eval-\([a-z]*\)/metrics.json|\1|" | tr "\n" " ")
    [ "$trained" = "-" ] && [ -z "$last" ] && [ -z "$evals" ] && continue
    label=$([ "$s" = "$d" ] && echo "$name" || echo "$name/$(basename "$s")")  # a row without seeds: its folder
    echo "- $label: $trained ${last:+($last)} ${evals:+evaluated: $evals}"
  done
done
