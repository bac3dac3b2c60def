#!/usr/bin/env bash
# Builds docs/gallery/: for each example below, the derivation as a PDF in English and in Chinese,
# and every page of each rendered to PNG at 50 dpi (for a quick look in a browser), with an index.
# Needs what `--format pdf` needs (TeX Live's xelatex and latexmk, a CJK font: scripts/test.sh installs
# them) and poppler's pdftoppm. Usage: bash scripts/gallery.sh [NAME ...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/gallery
programs=$out/programs
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# name | program file | extra options | what it shows
examples=(
  "two_layer_net|examples/two_layer_net.bs||a two-layer ReLU net with a squared-error loss"
  "lenet|examples/lenet.bs||LeNet: convolution, max pooling, linear layers and cross-entropy"
  "softmax_classifier|$programs/softmax_classifier.bs||a softmax classifier (linear layer and cross-entropy)"
  "batch_norm|$programs/batch_norm.bs||batch normalisation written step by step"
  "classifier_by_hand|$programs/classifier_by_hand.bs|--compact --wrt W1,b1,W2,b2|a two-layer classifier written by hand (X @ W + b; max-subtraction, exp, a sum, a log and a pick) with --compact: each layer one step with its textbook rule"
  "lstm_cell|$programs/lstm_cell.bs||an LSTM cell, each of its four gates with weight matrices of its own (no slicing)"
  "square_plus_three|examples/square_plus_three.bs|--at x=2|x² + 3 at x = 2, the numbers on the graph"
)

wanted=("$@")
index=$out/README.md
mkdir -p "$out"
if [ ${#wanted[@]} = 0 ]; then
  {
    echo "# Gallery"
    echo
    echo "What backstep hands a class: each example derived, verified against PyTorch autograd, and typeset"
    echo "(\`bash scripts/gallery.sh\` rebuilds this folder). The PNGs are the PDF's pages at 50 dpi."
    echo
  } > "$index"
fi
for entry in "${examples[@]}"; do
  IFS='|' read -r name file options about <<< "$entry"
  if [ ${#wanted[@]} != 0 ] && [[ ! " ${wanted[*]} " =~ " $name " ]]; then
    continue
  fi
  [ ${#wanted[@]} = 0 ] && printf '## %s\n\n%s: `backstep derive -f %s%s`\n\n' "$name" "$about" "$file" "${options:+ $options}" >> "$index"
  for lang in en zh; do
    pdf=$out/$name.$lang.pdf
    # shellcheck disable=SC2086  # the options are words
    python -m backstep derive -f "$file" $options --lang "$lang" -o "$pdf" > /dev/null
    rm -f "$out/$name.$lang"-*.png
    pdftoppm -r 50 -png "$pdf" "$out/$name.$lang"
    pages=$(ls "$out/$name.$lang"-*.png | wc -l)
    echo "$pdf: $pages pages"
    if [ ${#wanted[@]} = 0 ]; then
      printf -- '- [%s PDF](%s) (%s pages):' "$lang" "$name.$lang.pdf" "$pages" >> "$index"
      for png in "$out/$name.$lang"-*.png; do
        printf ' [%s](%s)' "$(basename "$png" .png | sed 's/.*-//')" "$(basename "$png")" >> "$index"
      done
      printf '\n' >> "$index"
    fi
  done
  [ ${#wanted[@]} = 0 ] && echo >> "$index"
done
du -sh "$out"
