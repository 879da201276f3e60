#!/usr/bin/env bash
# Install senseindex, index the bundled sample corpus and run example queries on it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/install.sh"
cd "$ROOT"
senseindex build-index data/sample --index sample.idx --overwrite
echo
echo '$ senseindex query --word "I sat on the [bank] of the river" --index sample.idx -k 5'
senseindex query --word "I sat on the [bank] of the river" --index sample.idx -k 5
echo
echo '$ senseindex query --word "She deposited the cheque at the [bank]" --index sample.idx -k 5'
senseindex query --word "She deposited the cheque at the [bank]" --index sample.idx -k 5
echo
echo '$ senseindex query --word "The [crane] lifted steel beams onto the roof" --any-word --index sample.idx -k 5'
senseindex query --word "The [crane] lifted steel beams onto the roof" --any-word --index sample.idx -k 5
echo
echo '$ senseindex query "a heron standing still in shallow water" --index sample.idx -k 3'
senseindex query "a heron standing still in shallow water" --index sample.idx -k 3
echo
echo '$ senseindex query "a family day out at the zoo" --documents --index sample.idx -k 3'
senseindex query "a family day out at the zoo" --documents --index sample.idx -k 3
echo
echo '$ senseindex senses apple --index sample.idx --examples 2 --plot apple-senses.png'
senseindex senses apple --index sample.idx --examples 2 --plot apple-senses.png
echo
echo '$ senseindex check --index sample.idx'
senseindex check --index sample.idx
